"""NTO3D web app: python app.py --data data/NAME [--conf confs/synthetic.conf] [--host 127.0.0.1] [--port 7860]."""
import sys

from webapp.main import main

if __name__ == "__main__":
    sys.exit(main())
