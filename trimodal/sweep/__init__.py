"""Sweeps over the design space (points, trials on Ray Tune, the results table) and the laws fitted to them (fits, report). May import model and below; never jobs."""
