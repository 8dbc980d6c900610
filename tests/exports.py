"""What the export's tests share: the README's script, the command run in-process, a digest."""

import hashlib
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "export", "export_model.py")


def run_cli(capsys, *argv):
    """Runs the command's main() in this process: (exit status, stdout, stderr)."""
    from tf_conv3dt.export.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exit_info:  # argparse's --help and bad flags
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree_digest(path):
    digest = hashlib.sha256()
    for directory, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            digest.update(name.encode())
            digest.update(open(os.path.join(directory, name), "rb").read())
    return digest.hexdigest()
