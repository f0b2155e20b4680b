"""The `hub` command line."""

import warnings

# asyncssh (the SFTP adapter) still imports cryptography's DSA classes, which warn on import: ten lines of
# noise before every command's output that a user can do nothing about. Set here, before hub.cli.main
# imports the adapters.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
