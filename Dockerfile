FROM python:3.11-slim
RUN useradd --create-home --uid 1000 dicomweb && mkdir /data && chown dicomweb /data
WORKDIR /app
COPY pyproject.toml README.md schema.sql ./
COPY dicomweb ./dicomweb
COPY reporting ./reporting
RUN rm dicomweb/schema.sql && cp schema.sql dicomweb/schema.sql && pip install --no-cache-dir .
USER dicomweb
ENV DICOMWEB_HOST=0.0.0.0 DICOMWEB_DATA_DIR=/data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz').status != 200)"
CMD ["dicomweb", "serve"]
