import sys

from mxsend._cli import main

sys.exit(main())
