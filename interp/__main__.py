import sys

from interp.app.cli.main import main

sys.exit(main())
