# orgsync: one image for every role (worker, scheduler, CLI). Build: docker build -t orgsync .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY orgsync ./orgsync
COPY domain ./domain
COPY storage ./storage
COPY aws ./aws
COPY workers ./workers
COPY scheduler ./scheduler
COPY localaws ./localaws
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 orgsync
COPY --from=build /install /usr/local
USER orgsync
ENV PYTHONUNBUFFERED=1 ORGSYNC_LOG_FORMAT=json
ENTRYPOINT ["orgsync"]
CMD ["--help"]
