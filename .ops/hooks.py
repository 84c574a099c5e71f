# ruff: noqa
# mypy: ignore-errors
"""Apply the metrics hooks to whichever module holds each anchor (pre- or post-layout paths)."""

import pathlib, re, sys

root = pathlib.Path(sys.argv[1]) / "django_pulse"
files = {p: p.read_text() for p in root.rglob("*.py")}


def rel_import(path):
    depth = len(path.relative_to(root).parts) - 1
    return "from " + "." * (depth + 1) + " import metrics"


HOOKS = [
    (
        "dispatch",
        """        message = {"type": "websocket.send", "text": text}
        nbytes = utf8_len(text)
        for sink in sinks:
            sink.push(message, nbytes)
""",
        """        message = {"type": "websocket.send", "text": text}
        nbytes = utf8_len(text)
        count = len(sinks)
        for sink in sinks:
            sink.push(message, nbytes)
        metrics.delivered(count, nbytes, text, time.time() * 1000)  # once per batch, never per socket
""",
        ["time"],
    ),
    (
        "discontinuity",
        """            self.dispatch(topic, discontinuity_frame(topic_channel(topic), reason))
""",
        """            self.dispatch(topic, discontinuity_frame(topic_channel(topic), reason))
            metrics.discontinuity(len(self.topics.get(topic, ())))
""",
        [],
    ),
    (
        "admit",
        """        if self._inbound.allow(now):
            return True
""",
        """        if self._inbound.allow(now):
            return True
        metrics.rate_limited()
""",
        [],
    ),
    (
        "publish_rate",
        """    if not conn._publishes.allow(time.monotonic()):
        raise LimitExceeded(""",
        """    if not conn._publishes.allow(time.monotonic()):
        metrics.rate_limited()
        raise LimitExceeded(""",
        [],
    ),
    (
        "auth",
        """            claims = await _authenticate(token)
        except PulseError as exc:
""",
        """            claims = await _authenticate(token)
        except PulseError as exc:
            metrics.auth_failed(exc.code.value)
""",
        [],
    ),
    (
        "slow",
        """        self.close(CloseCode.SLOW_CONSUMER)
""",
        """        metrics.slow_consumer()
        self.close(CloseCode.SLOW_CONSUMER)
""",
        [],
    ),
    (
        "resume",
        """    if plan.resumed is not None:
        result["resumed"] = plan.resumed
""",
        """    if plan.resumed is not None:
        result["resumed"] = plan.resumed
        metrics.resumed(plan.resumed)
""",
        [],
    ),
    (
        "started",
        """    registry.connection_opened()
""",
        """    registry.connection_opened()
    metrics.ensure_loop_monitor()
""",
        [],
    ),
]
changed = set()
for name, old, new, mods in HOOKS:
    hits = [p for p, t in files.items() if old in t]
    if len(hits) != 1:
        print("HOOK", name, "anchor found in", [str(h) for h in hits])
        continue
    p = hits[0]
    files[p] = files[p].replace(old, new, 1)
    for mod in mods:
        if not re.search(rf"^import {mod}$", files[p], re.M):
            files[p] = (
                files[p].replace("import asyncio\n", f"import asyncio\nimport {mod}\n", 1)
                if "import asyncio\n" in files[p]
                else files[p]
            )
            if not re.search(rf"^import {mod}$", files[p], re.M):
                print("HOOK", name, "could not add import", mod, p)
    changed.add(p)
    print("HOOK", name, "->", p.relative_to(root))
for p in changed:
    t = files[p]
    imp = rel_import(p)
    if imp not in t:
        lines = t.split("\n")
        idx = min(i for i, l in enumerate(lines) if l.startswith("from ."))
        lines.insert(idx, imp)
        t = "\n".join(lines)
    p.write_text(t)
