import sys

from mxsend.cli import main

sys.exit(main())
