"""The README's command table lists every command and every option of it, taken from click
itself, so an option added to a command without its line in the README fails here."""

import pathlib
import re

import click

from trimodal.cli import cli

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _leaves(group: click.Group, path: tuple[str, ...] = ()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _leaves(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def _rows() -> list[str]:
    return re.findall(r"^\| `(trimodal [^`]+)` \|", README.read_text(), re.M)


def test_every_command_and_option_is_in_the_readme_table():
    rows = _rows()
    leaves = list(_leaves(cli))
    assert len(leaves) >= 12
    for path, cmd in leaves:
        prefix = "trimodal " + " ".join(path)
        matching = [r for r in rows if r == prefix or r.startswith(prefix + " ")]
        assert len(matching) == 1, f"README: no single table row for `{prefix}`"
        for p in cmd.params:
            if isinstance(p, click.Option):
                names = [o for o in p.opts + p.secondary_opts if o.startswith("--")]
                assert any(re.search(re.escape(o) + r"(?![\w-])", matching[0]) for o in names), (
                    f"README: `{prefix}` row lacks {'/'.join(names)}"
                )
