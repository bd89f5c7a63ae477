"""The cluster profile's process list, from the real Procfile: two copies of everything, each
web copy on its own port, Celery beat exactly once."""

from devstack.launcher import BASE_DIR, cluster_processes, read_procfile


def beats(command: str) -> bool:
    words = command.split()
    return words[:1] == ["celery"] and ("beat" in words or "--beat" in words)


def test_every_procfile_process_runs_twice_but_beat_runs_once():
    entries = read_procfile(BASE_DIR / "Procfile")
    processes = cluster_processes(entries, port=18000)

    names = [name for name, _, _ in processes]
    for name, command in entries:
        copies = [n for n in names if n == name or n.rpartition("-")[0] == name]
        assert len(copies) == (1 if beats(command) and "--beat" not in command.split() else 2), (name, copies)
    webs = {name: env["PORT"] for name, _, env in processes if name.startswith("web-")}
    assert webs == {"web-1": "18000", "web-2": "18001"}
    # Two beats would queue every periodic task twice.
    assert len([name for name, command, _ in processes if beats(command)]) == 1
    workers = [command.split() for name, command, _ in processes if name.startswith("worker-")]
    assert len(workers) == 2
    # Two workers of one node name would confuse Celery's remote control.
    assert {words[words.index("--hostname") + 1] for words in workers} == {"worker-1@%h", "worker-2@%h"}


def test_a_worker_that_runs_beat_keeps_it_in_its_first_copy_only():
    entries = [("worker", "celery -A foodsite worker --beat --concurrency 1")]
    commands = {name: command.split() for name, command, _ in cluster_processes(entries, port=18000)}
    assert "--beat" in commands["worker-1"]
    assert "--beat" not in commands["worker-2"]
