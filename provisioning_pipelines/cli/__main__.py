import sys

from provisioning_pipelines.cli import main

sys.exit(main())
