# kvswarm: one image for the Locust master, the Locust workers and the simulated stack.
#
#   docker build -t kvswarm:latest .
#   docker run --rm -p 8089:8089 kvswarm:latest -f locustfiles/ --host http://host:8000
#   docker run --rm --entrypoint kvswarm kvswarm:latest sim --help
#
# The entrypoint is `locust`, so the container's arguments are Locust's (`--master`,
# `--worker --master-host ...`, `--headless`, `--kv-*`). The `kvswarm` command is on the
# PATH too (`--entrypoint kvswarm`), and so is `mooncake_master` from the `mooncake` extra:
# the simulated PD stack puts its KV blocks into a real Mooncake store.

# python:3.11-slim on Debian 12 (bookworm), named so the Debian package names below hold.
FROM python:3.11-slim-bookworm

# The caches point at /tmp so that any user id can write them (compose may run the image
# as the host's user, Kubernetes with a read-only root filesystem and /tmp mounted).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache

# What the Mooncake wheel (the `mooncake` extra) links against from the system, even when
# it only speaks TCP: libibverbs1, libnuma1, libcurl4.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libibverbs1 libnuma1 libcurl4 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/kvswarm

# Dependencies first, in their own layer: editing the project does not reinstall them.
COPY requirements.txt ./
RUN grep -v '^-e ' requirements.txt > /tmp/requirements-deps.txt \
    && pip install -r /tmp/requirements-deps.txt \
    && rm /tmp/requirements-deps.txt

# The project, laid out as in the repository, installed as requirements.txt does it
# (editable), plus the mooncake extra.
COPY pyproject.toml README.md ./
COPY lib/ lib/
COPY analysis/ analysis/
COPY locustfiles/ locustfiles/
COPY configs/ configs/
RUN pip install -e '.[mooncake]' \
    && mooncake_dir="$(python -c 'import importlib.util as u; print(u.find_spec("mooncake").submodule_search_locations[0])')" \
    && chmod a+rx "$mooncake_dir/mooncake_master" "$mooncake_dir/mooncake_client" \
    && kvswarm --version \
    && locust --version

# Run as an unprivileged user; results/ is where runs are written (mount a volume there).
RUN useradd --system --uid 10001 --user-group --home-dir /home/kvswarm --create-home kvswarm \
    && mkdir -p results \
    && chown kvswarm:kvswarm results
USER 10001:10001

# Locust web UI, Locust master (workers connect here), kvswarm's Prometheus exporter.
EXPOSE 8089 5557 9646

ENTRYPOINT ["locust"]
CMD ["--help"]
