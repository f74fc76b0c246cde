# Per-phase timing for CI scripts, sourced by .ci/test (and by the scripts it
# runs, which add their own sub-phases): `phase NAME` ends the phase before
# and starts NAME; the summary at exit lists every phase with its seconds,
# also when a phase failed, so a slow or failing run says where its time went.
#
# The phases of one run go to one file, $CI_PHASES_FILE, so that scripts run
# by .ci/test add their lines to its summary.

: "${CI_PHASES_FILE:=}"
_phase_name=""
_phase_started=0
_phase_depth="${CI_PHASE_DEPTH:-0}"

_phase_at=0

# Writes the phase's line where the phase began, above the lines of the
# sub-phases that scripts inside it appended meanwhile.
_phase_end() {
  [[ -n $_phase_name && -n $CI_PHASES_FILE ]] || return 0
  local indent=""
  ((_phase_depth > 0)) && indent="  "
  local line
  line="$(printf '%6ds  %s%s' "$((SECONDS - _phase_started))" "$indent" "$_phase_name")"
  if (($(wc -l <"$CI_PHASES_FILE") == _phase_at)); then
    echo "$line" >>"$CI_PHASES_FILE"
  elif ((_phase_at == 0)); then
    sed -i "1i\\$line" "$CI_PHASES_FILE"
  else
    sed -i "${_phase_at}a\\$line" "$CI_PHASES_FILE"
  fi
  _phase_name=""
}

phase() {
  _phase_end
  _phase_name="$1"
  _phase_started=$SECONDS
  _phase_at=0
  [[ -n $CI_PHASES_FILE ]] && _phase_at=$(wc -l <"$CI_PHASES_FILE")
  echo "== $1"
}

# Ends the last phase; at depth 0 also prints the summary.
phases_summary() {
  local status=$?
  _phase_end
  if ((_phase_depth == 0)) && [[ -s $CI_PHASES_FILE ]]; then
    echo
    echo "== timing (seconds per phase; indented: parts of the phase above them)"
    cat "$CI_PHASES_FILE"
    printf '%6ds  total (%s)\n' "$SECONDS" "$([[ $status -eq 0 ]] && echo passed || echo "FAILED, exit $status")"
  fi
  return "$status"
}
