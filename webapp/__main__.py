"""python -m webapp --data data/NAME (same as python app.py)."""
import sys

from webapp.main import main

sys.exit(main())
