#!/bin/sh
# make demo: the main job. Until the data/strategy issues land this runs the
# tensor/autograd example; it grows into the fortune-cookie fine-tuning demo.
set -eu
build="${1:-build}"
echo "== libpeft demo: fitting a linear map with the autograd API =="
"$build/examples/tensor_basics"
