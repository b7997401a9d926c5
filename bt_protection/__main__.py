import sys

from bt_protection.cli import main

sys.exit(main())
