import sys

from cftclip_core.proof.cli import main

sys.exit(main())
