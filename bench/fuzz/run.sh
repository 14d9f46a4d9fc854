#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of untrusted input (cargo-fuzz, libFuzzer with
# AddressSanitizer), on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the sanitizer
# flags cargo-fuzz passes. Installs cargo-fuzz if missing.
#
#   bench/fuzz/run.sh [SECONDS] [TARGET...]
#
# Runs each TARGET (default: every target in fuzz/Cargo.toml) for SECONDS (default 180) on
# its committed corpus (fuzz/corpus/TARGET, read only); inputs that reach new code go to a
# scratch corpus (fuzz/target/scratch/TARGET, emptied first). Any finding (panic, failed
# invariant, sanitizer report, leak, timeout, out of memory) fails the run; its input is in
# fuzz/artifacts/TARGET/.
# With MERGE=1 the scratch corpus is then minimised into the committed one (cargo fuzz cmin).
#
# One line of key=value figures per target; with several targets a last line sums them:
#   target= seconds= execs= execs_per_s= corpus= cov= features= new_units= peak_rss_mb= findings=
#   targets= seconds_each= execs= findings=
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

seconds=${1:-180}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(dns_packet api_json gossip_frame endpoint_record service_record plugin_answer cni_config enrol_request)
fi

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$root/fuzz/target}"

# The cargo feature of the fuzz crate that each target needs.
feature() {
  case "$1" in
    dns_packet | endpoint_record) echo dns ;;
    api_json) echo api ;;
    gossip_frame) echo gossip ;;
    service_record) echo lb ;;
    plugin_answer) echo drivers ;;
    cni_config) echo cni ;;
    enrol_request) echo tls ;;
    *) echo "bench/fuzz/run.sh: unknown target $1" >&2; return 1 ;;
  esac
}

# The value of `key: N` in the last libFuzzer status line that has it.
status_field() {
  grep -E "^#[0-9]+" "$2" | grep -oE "$1: [0-9]+" | tail -1 | grep -oE '[0-9]+$' || echo 0
}

# A figure of libFuzzer's final statistics (-print_final_stats=1).
stat_value() {
  grep -oE "stat::$1: +[0-9]+" "$2" | grep -oE '[0-9]+$' | tail -1 || echo 0
}

total_execs=0
total_findings=0
for t in "${targets[@]}"; do
  f=$(feature "$t")
  flags=(--no-default-features --features "$f")
  (cd fuzz && cargo fuzz build "${flags[@]}" "$t" >&2)
  scratch="$CARGO_TARGET_DIR/scratch/$t"
  rm -rf "$scratch" # each run starts from the committed corpus alone
  mkdir -p "$scratch" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="$CARGO_TARGET_DIR/scratch/$t.log"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  rc=0
  start=$(date +%s)
  (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -max_len=4096 -print_final_stats=1 \
    >"$log" 2>&1) || rc=$?
  secs=$(($(date +%s) - start))
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  findings=$((after - before))
  if [ "$rc" -ne 0 ] && [ "$findings" -eq 0 ]; then
    findings=1 # it failed without writing an input (e.g. the build or the harness's setup)
  fi
  if [ "$findings" -ne 0 ]; then
    echo "--- $t: finding; the end of its log ($log):" >&2
    tail -60 "$log" >&2
    ls -1 "fuzz/artifacts/$t" >&2
  fi
  execs=$(stat_value number_of_executed_units "$log")
  rss=$(stat_value peak_rss_mb "$log")
  new=$(stat_value new_units_added "$log")
  echo "target=$t seconds=$secs execs=${execs:-0} execs_per_s=$(( ${execs:-0} / (secs > 0 ? secs : 1) )) corpus=$(status_field corp "$log") cov=$(status_field cov "$log") features=$(status_field ft "$log") new_units=${new:-0} peak_rss_mb=${rss:-0} findings=$findings"
  total_execs=$((total_execs + ${execs:-0}))
  total_findings=$((total_findings + findings))
  if [ "${MERGE:-0}" = 1 ] && [ "$findings" -eq 0 ]; then
    # cmin minimises a directory in place (its libFuzzer arguments come before its own
    # directories, so another corpus cannot be passed there): copy the finds in first.
    find "$scratch" -type f -exec cp -t "fuzz/corpus/$t/" {} +
    (cd fuzz && cargo fuzz cmin "${flags[@]}" "$t" "corpus/$t" -- -max_len=4096 >>"$log" 2>&1)
    echo "merged into fuzz/corpus/$t: $(find "fuzz/corpus/$t" -type f | wc -l) inputs, $(du -sh --apparent-size "fuzz/corpus/$t" | cut -f1)" >&2
  fi
done

if [ ${#targets[@]} -gt 1 ]; then
  echo "targets=${#targets[@]} seconds_each=$seconds execs=$total_execs findings=$total_findings"
fi
[ "$total_findings" -eq 0 ]
