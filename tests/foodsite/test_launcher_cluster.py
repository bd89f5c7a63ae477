"""The cluster profile's process list, from the real Procfile: two copies of everything, each
web copy on its own port, Celery beat exactly once."""

from foodsite.launcher import BASE_DIR, cluster_processes, read_procfile


def test_every_procfile_process_runs_twice_with_beat_in_one_worker_only():
    entries = read_procfile(BASE_DIR / "Procfile")
    processes = cluster_processes(entries, port=18000)

    names = [name for name, _, _ in processes]
    assert sorted(names) == sorted(f"{name}-{copy}" for name, _ in entries for copy in (1, 2))
    webs = {name: env["PORT"] for name, _, env in processes if name.startswith("web-")}
    assert webs == {"web-1": "18000", "web-2": "18001"}
    workers = {name: command.split() for name, command, _ in processes if name.startswith("worker-")}
    assert [name for name, words in workers.items() if "--beat" in words] == ["worker-1"]
    # Two workers of one node name would confuse Celery's remote control.
    assert {words[words.index("--hostname") + 1] for words in workers.values()} == {"worker-1@%h", "worker-2@%h"}
