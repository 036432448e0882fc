# Sourced by the scripts: how they tell what they are doing.
SECONDS=0
say() { PHASE="$*"; printf '\n==> %s  [%dm%02ds]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }
note() { printf '    %s\n' "$*"; }
