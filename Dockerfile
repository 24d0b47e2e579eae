# CPU image: the embedded ONNX Runtime backend, NNCF and the whole pipeline.
FROM python:3.11-slim
WORKDIR /opt/compress
COPY pyproject.toml README.md ./
COPY compress ./compress
COPY recipes ./recipes
RUN pip install --no-cache-dir -e .
ENV COMPRESS_PROGRESS=1
ENTRYPOINT ["compress"]
CMD ["--help"]
