#!/usr/bin/env bash
# The CUDA checks of issue #15 in one short run, on a machine with an NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh prepare       # on a machine with PyPI access: wheels (CPython 3.12,
#                                              # x86-64 Linux) of the course's needs that a CUDA
#                                              # PyTorch image usually lacks -> .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh run [OUTDIR]  # on the GPU machine, from the repository root
#
# `run` installs .whl/ (if present) into a temporary folder on PYTHONPATH, without touching the
# image's packages or its own torch, then, each step under its own time limit, stopping early when
# the overall budget (BUDGET_S, default 500 s) would be exceeded:
#   1. torch sees a CUDA device (else exit 2) and nvidia-smi's view of it;
#   2. the unit tests with CUDA paths (vmap on CUDA equals sequential, timing syncs, NVML, devices);
#   3. benchmarks/run.py loop -> benchmarks/results/loop-cuda.json;
#   4. notebook 04 (acceleration: AMP, vmap) on device 'auto', which is CUDA there;
#   5. benchmarks/run.py acceleration -> acceleration-cuda.json;
#   6. notebooks 00-03, 05 and 06, while the budget lasts.
# Everything it writes lands in OUTDIR (default $OUT, else build/gpu-check), five files at most:
# summary.txt (what passed, nvidia-smi), steps.log (every step's output), loop-cuda.json,
# acceleration-cuda.json and course.tar.gz (the executed notebooks and their results).
# The exit status is 0 only if every step that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ROOTS="papermill ipykernel ipywidgets nbformat nbconvert mlxtend torchao"

prepare() {
    # The dependency closure of ROOTS as this checkout's .venv resolved it, minus what a CUDA
    # PyTorch image already holds (the scientific stack), pinned to the .venv's versions.
    local venv=${VENV_PY:-.venv/bin/python}
    local pins
    pins=$("$venv" - "$ROOTS" <<'EOF'
import importlib.metadata as md, re, sys
from packaging.requirements import Requirement
ON_IMAGE = {"torch", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib", "pillow", "contourpy", "cycler",
            "fonttools", "kiwisolver", "pyparsing", "python-dateutil", "joblib", "threadpoolctl", "narwhals",
            "tqdm", "psutil", "pyyaml", "requests", "urllib3", "idna", "certifi", "charset-normalizer", "click",
            "jinja2", "markupsafe", "pygments", "packaging", "typing-extensions", "attrs", "aiohttp", "cloudpickle"}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix",
       "platform_machine": "x86_64"}
norm = lambda n: re.sub(r"[-_.]+", "-", n.lower())
stack = [(name, frozenset()) for name in sys.argv[1].split()]
seen, pins = set(), {}
while stack:  # (distribution, extras asked of it): bleach[css] also needs tinycss2
    name, extras = stack.pop()
    name = norm(name)
    if (name, extras) in seen or name in ON_IMAGE:
        continue
    seen.add((name, extras))
    dist = md.distribution(name)
    pins[name] = f"{name}=={dist.version}"
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
            continue
        stack.append((req.name, frozenset(req.extras)))
pins = pins.values()
print(" ".join(sorted(pins)))
EOF
) || { echo "prepare: could not read the dependencies from $venv (run make env first)"; return 1; }
    rm -rf .whl && mkdir -p .whl
    # shellcheck disable=SC2086
    "$venv" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl $pins || return 1
    echo "prepare: $(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/ (carry it to the GPU machine)"
}

run_checks() {
    local out=${1:-${OUT:-build/gpu-check}} deadline=$((SECONDS + ${BUDGET_S:-500})) status=0
    mkdir -p "$out"
    local summary="$out/summary.txt"
    : > "$summary"
    say() { echo "$*" | tee -a "$summary"; }
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fedlab-site \
            .whl/*.whl || { say "could not install .whl/"; return 1; }
        export PYTHONPATH=/tmp/fedlab-site
    fi
    # The checkout itself is imported from the working directory: nothing is installed.
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 FEDLAB_PROGRESS=0 MPLBACKEND=Agg
    export PATH="/tmp/fedlab-site/bin:$PATH"
    if [ -z "${DRY_RUN_ON_CPU:-}" ]; then  # DRY_RUN_ON_CPU=1 tries the plumbing on a machine without a GPU
        "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, torch.cuda.get_device_name(0))" 2>&1 | tee -a "$summary" || return 2
        nvidia-smi >> "$summary" 2>&1 || true
    fi
    : > "$out/steps.log"

    # step NAME MIN_SECONDS MAX_SECONDS COMMAND...: skipped when fewer than MIN_SECONDS of the budget remain
    step() {
        local name=$1 need=$2 limit=$3
        shift 3
        local left=$((deadline - SECONDS))
        if ((left < need)); then say "SKIP  $name (${left}s of the budget left, needs ~${need}s)"; return; fi
        ((limit > left)) && limit=$left
        local start=$SECONDS rc=0
        timeout "$limit" "$@" > "$out/step.log" 2>&1 || rc=$?
        if ((rc == 0)); then
            say "PASS  $name ($((SECONDS - start))s)"
        else
            say "FAIL  $name (exit $rc$( ((rc == 124)) && echo ", over its ${limit}s"), $((SECONDS - start))s): see steps.log"
            tail -n 15 "$out/step.log" | sed 's/^/      /' | tee -a "$summary"
            status=1
        fi
        { echo "===== $name (exit $rc)"; cat "$out/step.log"; } >> "$out/steps.log" && rm -f "$out/step.log"
    }
    step pytest 30 150 "$PY" -m pytest -q -p no:cacheprovider -x tests/test_acceleration.py tests/test_timing.py \
        tests/test_ledger.py tests/test_bench_loop.py
    step bench-loop 60 200 "$PY" benchmarks/run.py loop
    step course-04 40 150 "$PY" -m fedlab_utils run 04 --out "$out/course"
    step bench-acceleration 40 120 "$PY" benchmarks/run.py acceleration
    step course-rest 60 400 "$PY" -m fedlab_utils run 00 01 02 03 05 06 --keep-going --out "$out/course"
    cp benchmarks/results/*-cuda.json "$out/" 2>/dev/null
    if [ -d "$out/course" ]; then tar -czf "$out/course.tar.gz" -C "$out" course && rm -rf "$out/course"; fi
    say "budget used: ${SECONDS}s; results: $(ls "$out" | tr '\n' ' ')"
    return $status
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run_checks "$@" ;;
    *) echo "usage: bash benchmarks/gpu_check.sh prepare | run [OUTDIR]"; exit 64 ;;
esac
