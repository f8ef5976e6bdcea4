FROM python:3.11-slim
# tini as PID 1 reaps orphaned processes: the embedded PostgreSQL's backends, when its postmaster dies and the server
# starts it again (dicomweb/db/embedded.py), would otherwise stay as zombies.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*
# /secrets: the mount point of docker-compose.yml's volume for the token secret all replicas share (a new volume takes
# its owner from the mount point, so the server can create the secret there).
RUN useradd --create-home --uid 1000 dicomweb && mkdir /data /secrets && chown dicomweb /data /secrets
WORKDIR /app
COPY pyproject.toml README.md schema.sql ./
COPY dicomweb ./dicomweb
COPY reporting ./reporting
RUN rm dicomweb/schema.sql && cp schema.sql dicomweb/schema.sql && pip install --no-cache-dir .
USER dicomweb
ENV DICOMWEB_HOST=0.0.0.0 DICOMWEB_DATA_DIR=/data
EXPOSE 8080 11112
HEALTHCHECK --interval=10s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz').status != 200)"
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dicomweb", "serve"]
