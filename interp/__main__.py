import sys

from interp.cli.main import main

sys.exit(main())
