# Sourced by the device scripts (bench/gpu_*.sh): the carried wheels (.whl/, built for the device's Python)
# installed into /tmp/site and put on PYTHONPATH; nothing where .whl/ was not carried.
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
