import sys

from replay.damage import main

sys.exit(main())
