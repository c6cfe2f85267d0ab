import sys

from train_jobs.cli import main

sys.exit(main())
