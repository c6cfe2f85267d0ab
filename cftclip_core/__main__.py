import sys

from cftclip_core.cli import main

sys.exit(main())
