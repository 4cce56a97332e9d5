"""Jepsen etcd histories from Porcupine's test suite (test_data/jepsen/etcd_000.log, etcd_002.log).

Porcupine expects etcd_000 to be non-linearizable and etcd_002 linearizable.
The logs are Jepsen's ``INFO jepsen.util - <process> <type> <f> <value>``
lines with the prefix dropped. As in Porcupine's etcd model, ``:fail`` on a
CAS means the compare failed (the op happened and answered false), which is
``ok`` with ``{"cas_ok": false}`` here; ``:info`` is a timeout.
"""

from __future__ import annotations

from jepsen_like.checkers.linearizability import check
from jepsen_like.checkers.result import Verdict
from jepsen_like.history import FAIL, INFO, INVOKE, OK, Event, pair


def parse(log: str) -> list[Event]:
    out = []
    for line in log.strip().splitlines():
        p, kind, f, value = line.split(" ", 3)
        kind, f = kind[1:], f[1:]
        v = None if value in ("nil", ":timed-out") else \
            [int(x) for x in value[1:-1].split()] if value.startswith("[") else int(value)
        if kind == FAIL and f == "cas":
            kind, v = OK, {"cas_ok": False}
        elif kind == OK and f == "write":
            v = None
        out.append(Event({"invoke": INVOKE, "ok": OK, "fail": FAIL, "info": INFO}[kind], int(p), f, None, v, len(out)))
    return out


def test_etcd_000_is_not_linearizable() -> None:
    res = check(parse(ETCD_000))
    assert res.verdict == Verdict.ILLEGAL
    (a,) = res.anomalies
    assert a.minimal and "cannot linearize" in res.describe()


def test_etcd_002_is_linearizable() -> None:
    evs = parse(ETCD_002)
    ops = pair(evs)
    assert sum(o.type == INFO for o in ops) == 19  # timeouts that may or may not have happened
    assert check(evs).verdict == Verdict.OK


ETCD_000 = """
0 :invoke :read nil
3 :invoke :read nil
2 :invoke :write 4
1 :invoke :write 2
4 :invoke :write 3
3 :ok :read nil
0 :ok :read nil
4 :ok :write 3
1 :ok :write 2
2 :ok :write 4
3 :invoke :write 3
0 :invoke :read nil
0 :ok :read 3
3 :ok :write 3
4 :invoke :read nil
4 :ok :read 3
1 :invoke :read nil
1 :ok :read 3
2 :invoke :cas [3 0]
2 :ok :cas [3 0]
0 :invoke :write 2
3 :invoke :read nil
0 :ok :write 2
3 :ok :read 0
4 :invoke :read nil
4 :ok :read 2
1 :invoke :cas [0 3]
2 :invoke :cas [0 0]
1 :fail :cas [0 3]
2 :fail :cas [0 0]
0 :invoke :cas [2 1]
3 :invoke :read nil
3 :ok :read 2
0 :ok :cas [2 1]
4 :invoke :read nil
4 :ok :read 1
1 :invoke :read nil
1 :ok :read 1
2 :invoke :read nil
2 :ok :read 1
3 :invoke :write 0
0 :invoke :cas [1 3]
3 :ok :write 0
4 :invoke :write 2
0 :fail :cas [1 3]
4 :ok :write 2
1 :invoke :read nil
1 :ok :read 2
2 :invoke :cas [1 1]
2 :fail :cas [1 1]
3 :invoke :cas [0 0]
0 :invoke :read nil
0 :ok :read 2
4 :invoke :write 1
3 :fail :cas [0 0]
1 :invoke :cas [2 1]
2 :invoke :write 2
2 :ok :write 2
0 :invoke :cas [1 4]
3 :invoke :write 3
4 :info :write :timed-out
0 :fail :cas [1 4]
3 :ok :write 3
1 :info :cas :timed-out
2 :invoke :write 2
9 :invoke :write 3
0 :invoke :read nil
0 :ok :read 3
2 :ok :write 2
3 :invoke :cas [3 4]
3 :fail :cas [3 4]
6 :invoke :cas [1 1]
9 :info :write :timed-out
0 :invoke :write 1
0 :ok :write 1
2 :invoke :cas [0 0]
2 :fail :cas [0 0]
3 :invoke :cas [2 2]
6 :info :cas :timed-out
3 :fail :cas [2 2]
14 :invoke :write 4
0 :invoke :cas [4 3]
0 :fail :cas [4 3]
2 :invoke :write 0
11 :invoke :read nil
11 :ok :read 2
2 :ok :write 0
3 :invoke :write 2
3 :ok :write 2
14 :info :write :timed-out
0 :invoke :write 1
11 :invoke :cas [2 1]
2 :invoke :cas [0 3]
3 :invoke :read nil
3 :ok :read 2
19 :invoke :read nil
19 :ok :read 2
0 :info :write :timed-out
11 :info :cas :timed-out
2 :info :cas :timed-out
3 :invoke :read nil
3 :ok :read 2
19 :invoke :cas [1 3]
19 :ok :cas [1 3]
5 :invoke :write 0
16 :invoke :cas [4 3]
7 :invoke :cas [1 2]
5 :ok :write 0
7 :fail :cas [1 2]
16 :fail :cas [4 3]
3 :invoke :cas [4 2]
3 :fail :cas [4 2]
19 :invoke :cas [0 1]
19 :ok :cas [0 1]
5 :invoke :cas [4 0]
7 :invoke :cas [1 4]
16 :invoke :read nil
16 :ok :read 1
3 :invoke :cas [1 3]
3 :fail :cas [1 3]
5 :ok :cas [4 0]
7 :ok :cas [1 4]
19 :invoke :cas [2 0]
19 :fail :cas [2 0]
16 :invoke :read nil
16 :ok :read 0
3 :invoke :read nil
3 :ok :read 0
5 :invoke :read nil
7 :invoke :cas [4 2]
5 :ok :read 0
7 :fail :cas [4 2]
19 :invoke :cas [2 3]
19 :fail :cas [2 3]
16 :invoke :cas [4 1]
3 :invoke :write 4
5 :invoke :write 4
7 :invoke :cas [0 2]
19 :invoke :read nil
19 :ok :read 0
16 :info :cas :timed-out
3 :info :write :timed-out
5 :info :write :timed-out
7 :info :cas :timed-out
19 :invoke :write 3
19 :ok :write 3
21 :invoke :cas [2 0]
21 :fail :cas [2 0]
8 :invoke :write 4
10 :invoke :write 2
10 :ok :write 2
12 :invoke :cas [4 4]
19 :invoke :write 4
21 :invoke :read nil
21 :ok :read 4
19 :ok :write 4
8 :info :write :timed-out
10 :invoke :cas [0 1]
12 :info :cas :timed-out
10 :fail :cas [0 1]
21 :invoke :cas [3 3]
21 :fail :cas [3 3]
19 :invoke :read nil
19 :ok :read 4
13 :invoke :cas [2 2]
17 :invoke :cas [4 4]
13 :info :cas :timed-out
17 :info :cas :timed-out
10 :invoke :read nil
10 :ok :read 1
"""

ETCD_002 = """
4 :invoke :read nil
4 :ok :read nil
1 :invoke :write 1
2 :invoke :cas [2 4]
3 :invoke :cas [1 2]
0 :invoke :cas [1 4]
1 :ok :write 1
0 :fail :cas [1 4]
2 :ok :cas [2 4]
3 :ok :cas [1 2]
4 :invoke :write 0
4 :ok :write 0
1 :invoke :write 2
1 :ok :write 2
0 :invoke :read nil
0 :ok :read 2
2 :invoke :cas [0 2]
3 :invoke :cas [2 3]
2 :fail :cas [0 2]
3 :ok :cas [2 3]
4 :invoke :read nil
4 :ok :read 3
1 :invoke :write 3
1 :ok :write 3
0 :invoke :write 2
2 :invoke :write 0
0 :ok :write 2
2 :ok :write 0
3 :invoke :cas [0 4]
3 :ok :cas [0 4]
4 :invoke :cas [3 4]
4 :fail :cas [3 4]
1 :invoke :write 1
0 :invoke :write 3
0 :ok :write 3
1 :ok :write 1
2 :invoke :read nil
2 :ok :read 3
3 :invoke :read nil
3 :ok :read 3
4 :invoke :read nil
4 :ok :read 3
0 :invoke :cas [4 3]
0 :fail :cas [4 3]
1 :invoke :cas [2 2]
2 :invoke :write 3
1 :fail :cas [2 2]
3 :invoke :write 2
4 :invoke :write 2
4 :ok :write 2
0 :invoke :cas [1 4]
0 :fail :cas [1 4]
2 :info :write :timed-out
1 :invoke :write 3
1 :ok :write 3
3 :info :write :timed-out
4 :invoke :cas [3 0]
4 :ok :cas [3 0]
0 :invoke :read nil
0 :ok :read 0
7 :invoke :cas [3 1]
1 :invoke :write 1
8 :invoke :read nil
8 :ok :read 3
4 :invoke :cas [4 0]
1 :ok :write 1
0 :invoke :write 2
0 :ok :write 2
7 :info :cas :timed-out
4 :fail :cas [4 0]
8 :invoke :cas [4 0]
1 :invoke :write 0
1 :ok :write 0
0 :invoke :write 4
0 :ok :write 4
12 :invoke :write 4
4 :invoke :read nil
4 :ok :read 4
8 :info :cas :timed-out
1 :invoke :read nil
1 :ok :read 4
0 :invoke :write 2
12 :info :write :timed-out
0 :ok :write 2
4 :invoke :cas [3 0]
4 :fail :cas [3 0]
13 :invoke :write 3
1 :invoke :write 0
17 :invoke :read nil
0 :invoke :cas [2 1]
17 :ok :read 3
4 :invoke :write 1
13 :info :write :timed-out
1 :info :write :timed-out
0 :info :cas :timed-out
17 :invoke :cas [0 1]
4 :info :write :timed-out
18 :invoke :read nil
18 :ok :read 3
6 :invoke :write 3
5 :invoke :write 2
17 :info :cas :timed-out
9 :invoke :cas [2 2]
18 :invoke :write 4
6 :info :write :timed-out
5 :info :write :timed-out
22 :invoke :write 1
9 :info :cas :timed-out
18 :info :write :timed-out
11 :invoke :write 3
10 :invoke :cas [1 1]
22 :info :write :timed-out
14 :invoke :write 0
11 :ok :write 3
23 :invoke :cas [4 4]
14 :ok :write 0
10 :fail :cas [1 1]
23 :fail :cas [4 4]
27 :invoke :write 1
11 :invoke :write 2
11 :ok :write 2
14 :invoke :cas [1 2]
10 :invoke :read nil
10 :ok :read 2
14 :fail :cas [1 2]
23 :invoke :read nil
23 :ok :read 0
27 :info :write :timed-out
11 :invoke :write 1
11 :ok :write 1
10 :invoke :read nil
10 :ok :read 1
14 :invoke :write 2
23 :invoke :cas [2 3]
32 :invoke :cas [2 1]
14 :ok :write 2
11 :invoke :write 4
11 :ok :write 4
10 :invoke :cas [1 1]
10 :fail :cas [1 1]
23 :info :cas :timed-out
32 :info :cas :timed-out
14 :invoke :write 4
14 :ok :write 4
11 :invoke :cas [2 4]
11 :fail :cas [2 4]
10 :invoke :read nil
10 :ok :read 4
28 :invoke :read nil
28 :ok :read 0
37 :invoke :write 3
37 :info :write :timed-out
14 :invoke :read nil
14 :ok :read 4
"""
