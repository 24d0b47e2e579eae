# CPU image: the embedded ONNX Runtime backend, NNCF and the whole pipeline.
FROM python:3.11-slim
WORKDIR /opt/compress
COPY pyproject.toml README.md ./
COPY compress ./compress
COPY recipes ./recipes
# torch's CPU wheels first (PyPI's default torch is a CUDA build, several GB of libraries a CPU image never uses)
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch>=2.4" "torchvision>=0.19" \
 && pip install --no-cache-dir -e .
ENV COMPRESS_PROGRESS=1
ENTRYPOINT ["compress"]
CMD ["--help"]
