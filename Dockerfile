# signoff: one image for the API (and, later, the projection process).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain domain
COPY service service
COPY agent agent
COPY api api
COPY projections projections
COPY cli cli
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app signoff \
    && mkdir -p /app /data && chown signoff /app /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER signoff
WORKDIR /app
ENV SIGNOFF_HOST=0.0.0.0 SIGNOFF_PORT=7777 SIGNOFF_DATABASE_URL=sqlite:////data/signoff.db
EXPOSE 7777
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7777/health')"
ENTRYPOINT ["signoff"]
CMD ["serve"]
