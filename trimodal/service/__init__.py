"""The tokenization service: the tokenize job's codecs online, on Ray Serve (docs/service.md).

config.py  typed ServeConfig (the job's `tokenizers:` and `limits:` blocks, `vocab`, `serve:`),
           checked and the tokenizers loaded before Ray starts; `--dataset` mode; bind checks
codec.py   one request item: parse, prepare (the job's own code), encode, decode, PNG / WAV
app.py     the Serve deployments (one codec deployment per modality, one HTTP ingress), start/stop
render.py  decode a dataset's samples into files and an index.html (`trimodal inspect --render`)

Modules are imported on use: importing `trimodal.service` does not import Ray Serve.
"""
