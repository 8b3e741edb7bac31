# Stand-in for python:3.11-slim (deploy/smoke.sh): Debian bookworm's Python 3.11 in a virtualenv on
# PATH, so `python` and `pip` are what the official image gives. Offline: pip installs only from the
# wheelhouse deploy/smoke.sh serves on the host's loopback for the build (WHEELS_URL), and the npm
# packages' model files are already where deploy/Dockerfile's FACEGATE_MODEL_DIR points, so its
# `facegate fetch-models` checks them instead of asking npm's registry.
ARG ROOTFS
FROM ${ROOTFS}
RUN python3 -m venv /usr/local/python
ARG WHEELS_URL
# The wheelhouse's stamp (pyproject.toml's digest): the images that pip-install from it are rebuilt
# when it changes, not taken from the layer cache.
ARG WHEELHOUSE
LABEL org.facegate.smoke.wheelhouse=${WHEELHOUSE}
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=${WHEELS_URL}
COPY models/ /opt/facegate/models/
