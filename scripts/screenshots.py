"""Take the screenshots in docs/img/: the HTML report of a finished run and the live dashboard of
`stretto serve` following a running one. Needs Debian's chromium (scripts/install-chromium) and
Playwright for Python (the dev extra). Run from the repository:
`.venv/bin/python scripts/screenshots.py`.

Everything happens in a throwaway repository in a temporary folder, with shell agents.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
CHROMIUM = "/usr/bin/chromium"
STRETTO = [sys.executable, "-m", "stretto"]

PLAN = """\
name: shop
stages:
  - name: models
    steps:
      - {id: schema, title: Database schema, goal: tables, files: [db/schema.sql],
         command: "sleep 1.2; mkdir -p db; echo 'create table t(x);' > db/schema.sql"}
      - {id: api-types, title: API types, goal: types, files: [api/types.py],
         command: "sleep 0.8; mkdir -p api; echo 'T = 1' > api/types.py"}
  - name: features
    depends_on: [models]
    steps:
      - {id: cart, title: Shopping cart, goal: cart, files: [api/cart.py],
         command: "sleep 1.5; echo 'cart = []' > api/cart.py"}
      - id: checkout
        title: Checkout
        goal: checkout
        files: [api/checkout.py]
        command: >-
          test -e $HOME/.checkout-tried || { touch $HOME/.checkout-tried; exit 1; };
          sleep 1; echo ok > api/checkout.py
      - {id: search, title: Search, goal: search, files: [api/search.py],
         command: "sleep 0.6; echo 'def search(): pass' > api/search.py"}
  - name: docs
    depends_on: [features]
    steps:
      - {id: readme, title: README, goal: docs, files: [README.md],
         command: "sleep 0.5; echo '# shop' > README.md"}
"""

LIVE = """\
name: live
stages:
  - name: work
    steps:
      - {id: flaky, title: Flaky integration, goal: fails, files: [f.txt], command: "exit 1",
         max_attempts: 1}
      - {id: slow, title: Long refactor, goal: keeps going, files: [s.txt],
         command: "sleep 20; echo s > s.txt"}
      - {id: quick, title: Quick fix, goal: lands, files: [q.txt], command: "echo q > q.txt"}
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(base: Path) -> Path:
    repo = base / "shop"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Demo")
    git(repo, "config", "user.email", "demo@example.com")
    (repo / "stretto.toml").write_text('target = "main"\nmax_agents = 3\n')
    (repo / ".gitignore").write_text(".stretto/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "start")
    return repo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env = {**os.environ, "HOME": str(base)}
        repo = make_repo(base)
        (base / "plan.yaml").write_text(PLAN)
        subprocess.run([*STRETTO, "run", "../plan.yaml", "--plain"], cwd=repo, env=env, check=False)
        report = base / "report.html"
        subprocess.run([*STRETTO, "report", "-o", str(report)], cwd=repo, env=env, check=True)

        port = free_port()
        run_id: str | None = None
        server = subprocess.Popen(
            [*STRETTO, "serve", "--port", str(port)],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            token_file = repo / ".stretto" / "serve-token"
            for _ in range(100):
                if token_file.exists():
                    break
                time.sleep(0.1)
            token = token_file.read_text().strip()
            base_url = f"http://127.0.0.1:{port}"
            request = urllib.request.Request(
                base_url + "/runs",
                data=json.dumps({"plan": LIVE}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                method="POST",
            )
            for _ in range(50):
                try:
                    with urllib.request.urlopen(request) as answer:
                        run_id = json.load(answer)["run_id"]
                    break
                except OSError:
                    time.sleep(0.2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.goto(report.as_uri())
                    page.screenshot(path=str(OUT / "report.png"), full_page=False)
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.goto(base_url + "/")
                    page.fill("#token", token)
                    page.click("#login button")
                    page.wait_for_selector('tr[data-task="flaky"]', timeout=30000)
                    time.sleep(2)
                    page.screenshot(path=str(OUT / "dashboard.png"), full_page=False)
                finally:
                    browser.close()
        finally:
            if run_id is not None:  # end the live run (its agents) before the folder goes
                subprocess.run([*STRETTO, "cancel", run_id], cwd=repo, env=env, check=False)
                subprocess.run(  # follows the journal until the run has ended
                    [*STRETTO, "events", run_id, "--follow"],
                    cwd=repo,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    timeout=60,
                    check=False,
                )
            server.terminate()
            server.wait(timeout=10)
    print(f"wrote {OUT / 'report.png'} and {OUT / 'dashboard.png'}")


if __name__ == "__main__":
    main()
