FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 hotline

WORKDIR /srv/hotline
COPY pyproject.toml README.md ./
COPY app.py config.py db.py line_config.py alembic.ini ./
COPY telephony telephony
COPY ivr ivr
COPY routing routing
COPY recording recording
COPY survey survey
COPY reporting reporting
COPY admin admin
COPY simulator simulator
COPY migrations migrations
COPY config config
RUN pip install --no-cache-dir . \
 && mkdir -p /srv/hotline/instance && chown hotline /srv/hotline/instance

USER hotline
ENV AUDIO_DIR=/srv/hotline/instance/audio
EXPOSE 8000
# No --preload: each forked worker opens its own database connections. Threads keep a worker
# serving while one client sends its body slowly; still run it behind a buffering proxy.
CMD ["gunicorn", "--workers", "4", "--threads", "4", "--timeout", "30", "--bind", "0.0.0.0:8000", "app:create_app()"]
