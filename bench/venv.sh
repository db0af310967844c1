# Sourced by run.sh and smoke.sh: makes bench/.venv (git-ignored) with the pinned packages of
# requirements.txt (Twisted, for the twisted-* herds), so a fresh clone needs nothing by hand.
# Reinstalls only when requirements.txt has changed since the last install.
bench_venv() {
    local here="$1" venv="$1/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -m venv "$venv" 2>/dev/null; then
            # Debian's python3 has venv in a package of its own.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                apt-get install -y -qq python3-venv >/dev/null
            fi
            rm -rf "$venv"
            python3 -m venv "$venv"
        fi
    fi
    if ! cmp -s "$here/requirements.txt" "$venv/requirements.installed"; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$here/requirements.txt"
        cp "$here/requirements.txt" "$venv/requirements.installed"
    fi
}
