import sys

from council.cli.main import main

sys.exit(main())
