"""NTO3D web app: click the target, watch the run, get the mesh (`python app.py --data data/NAME`)."""
