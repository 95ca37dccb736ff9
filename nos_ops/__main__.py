"""``python -m nos_ops``: the ``nos-ops`` command (:mod:`nos_ops.cli`)."""

from .cli import run

if __name__ == "__main__":
    run()
