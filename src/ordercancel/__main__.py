import sys

from ordercancel.cli import main

sys.exit(main())
