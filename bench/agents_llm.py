"""The offline agent LLM's speed and memory (SmolLM2-135M in numpy). Prints its figures.

- load time, and resident memory after loading (peak and now)
- first-token latency (prompt in → first text delta out) and decode tokens/s, over N runs:
  "cold": a new session each run, the whole prompt prefilled (a conversation's first turn);
  "warm": one session across turns, so only the new turn is prefilled (``ChatSession``)

    .venv/bin/python bench/agents_llm.py [--runs 10] [--max-tokens 48]
"""

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.agents import offline_llm  # noqa: E402

SYSTEM = (
    "You are the front desk of the Chorus office. Answer in one short sentence, from the "
    "facts below only.\n"
    "Facts: The office opens at 9 am and closes at 6 pm, Monday to Friday. It is closed on "
    "weekends. The address is 12 River Street. Parking is free behind the building. The "
    "support line is 555 0100."
)
QUESTIONS = [
    "When does the office open?",
    "Is it open on Saturday?",
    "Where is the office?",
    "Can I park there?",
    "What is the support number?",
]


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def turn(session, messages, max_tokens):
    """(first-delta seconds, decode tokens/s, usage, answer) of one answer."""
    started = time.perf_counter()
    first = None
    pieces = []
    for piece in session.generate(messages, temperature=0.0, max_tokens=max_tokens):
        if isinstance(piece, offline_llm.Usage):
            usage = piece
        else:
            first = first if first is not None else time.perf_counter() - started
            pieces.append(piece)
    total = time.perf_counter() - started
    decoded = usage.completion_tokens - 1
    rate = decoded / (total - first) if first is not None and decoded > 0 else float("nan")
    return first or total, rate, usage, "".join(pieces)


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(name, firsts, rates, prompts, cached):
    print(
        f"{name:5} first token p50 {statistics.median(firsts) * 1000:6.0f} ms "
        f"p95 {pct(firsts, 95) * 1000:6.0f} ms | decode {statistics.median(rates):5.1f} tok/s "
        f"| prompt {statistics.median(prompts):.0f} tokens, {statistics.median(cached):.0f} "
        "reused (medians)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    started = time.perf_counter()
    model = offline_llm.model()
    print(
        f"load {model.load_seconds:.2f} s (with imports {time.perf_counter() - started:.2f} s); "
        f"RSS peak {rss_peak_mb():.0f} MB, now {rss_now_mb():.0f} MB; "
        f"BLAS threads {offline_llm.BLAS_THREADS}"
    )

    firsts, rates, prompts, cached = [], [], [], []
    for run in range(args.runs):
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTIONS[run % len(QUESTIONS)]},
        ]
        first, rate, usage, answer = turn(offline_llm.Session(model), messages, args.max_tokens)
        firsts.append(first), rates.append(rate)
        prompts.append(usage.prompt_tokens), cached.append(usage.cached_tokens)
        if run < len(QUESTIONS):
            print(f"  {messages[1]['content']!r} -> {answer!r}")
    report("cold", firsts, rates, prompts, cached)

    session = offline_llm.Session(model)
    messages = [{"role": "system", "content": SYSTEM}]
    firsts, rates, prompts, cached = [], [], [], []
    for run in range(args.runs + 1):
        messages.append({"role": "user", "content": QUESTIONS[run % len(QUESTIONS)]})
        first, rate, usage, answer = turn(session, messages, args.max_tokens)
        messages.append({"role": "assistant", "content": answer})
        if run == 0:
            continue  # the first turn is a cold one
        firsts.append(first), rates.append(rate)
        prompts.append(usage.prompt_tokens), cached.append(usage.cached_tokens)
    report("warm", firsts, rates, prompts, cached)
    print(f"RSS after both: peak {rss_peak_mb():.0f} MB, now {rss_now_mb():.0f} MB")


if __name__ == "__main__":
    main()
