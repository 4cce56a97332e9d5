FROM python:3.11-slim
WORKDIR /app
# torch first and pinned, as in the README. Left to PyPI this is the CUDA build (several GB, what
# docker-compose.gpu.yml needs); --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu takes
# the CPU build instead.
ARG TORCH_INDEX=
RUN pip install --no-cache-dir torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
COPY pyproject.toml README.md ./
COPY deploy deploy
COPY api api
COPY service service
COPY consistency consistency
COPY world_model world_model
COPY jepsen_like jepsen_like
COPY tests tests
# A regular (not editable) install: the Lua merge scripts and the default model travel as package
# data (pyproject.toml), as tests/test_install.py checks on a wheel built the same way.
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["worldstate", "serve", "--host", "0.0.0.0", "--port", "8000"]
