FROM python:3.11-slim
WORKDIR /app
# torch first and pinned, as in the README; in a container this is the CUDA build.
RUN pip install --no-cache-dir torch==2.13.0
COPY pyproject.toml README.md ./
COPY deploy deploy
COPY api api
COPY service service
COPY consistency consistency
COPY world_model world_model
COPY jepsen_like jepsen_like
COPY tests tests
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["worldstate", "serve", "--host", "0.0.0.0", "--port", "8000"]
