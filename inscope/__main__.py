import sys

from inscope.cli import main

sys.exit(main())
