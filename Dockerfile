# signoff: one image for the API (`serve`, the default) and the projection process
# (`project`).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain domain
COPY service service
COPY agent agent
COPY api api
COPY projections projections
COPY cli cli
COPY bootstrap bootstrap
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# Time zones (analytics' tz=) come with the wheels: the tzdata package, a dependency, is
# zoneinfo's fallback, whether or not the base image keeps /usr/share/zoneinfo.
RUN useradd --system --uid 10001 --home-dir /app signoff \
    && mkdir -p /app /data && chown signoff /app /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER signoff
WORKDIR /app
ENV SIGNOFF_HOST=0.0.0.0 SIGNOFF_PORT=7777 SIGNOFF_DATABASE_URL=sqlite:////data/signoff.db
EXPOSE 7777
# For `serve` (the default command): the API answers /health. A container running
# another command (`signoff project`) says its own check (docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SIGNOFF_PORT', '7777'), timeout=5)"
ENTRYPOINT ["signoff"]
CMD ["serve"]
