# mgate: a multi-stage build on Debian 12.
#
#   docker build -t mgate .
#   docker run --rm -p 1884:1884 -e MGATE_MQTT_WITHOUT_TLS_TARGET_HOST=broker mgate
#
# The build stage installs the same -dev packages as tests/deps.sh (the
# documented install path); the runtime stage only the shared libraries the
# binary links. test_packaging checks both lists against tests/deps.sh and
# the binary. No Docker engine runs where mgate is developed, but podman does:
# tests/faults/test_container.py (ctest faults.container) builds this file
# with podman on a Debian 12 base made with debootstrap, runs the image
# against mosquitto (round trip, /readyz, uid 10001, SIGTERM drain) and checks
# that the runtime stage holds no compiler. .dockerignore keeps the build
# context to what is copied below.

FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config ca-certificates \
      libssl-dev libinih-dev libcurl4-openssl-dev libjansson-dev \
      node-llhttp \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY include include
COPY src src
COPY examples examples
# CMakeLists.txt also names bench/jwt_verify.c (mgate-jwt-bench, not built here): cmake
# refuses to generate while a source it names is missing.
COPY bench bench
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMGATE_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target mgate \
 && strip build/mgate

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libssl3 libinih1 libcurl4 libjansson4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --uid 10001 --shell /usr/sbin/nologin mgate
COPY --from=build /src/build/mgate /usr/local/bin/mgate
# The Go mGate's ports: MQTT, MQTT/TLS, MQTT/mTLS, WebSocket (ws, wss, wss+mTLS), and the admin
# listener (when MGATE_ADMIN_PORT=9090 and MGATE_ADMIN_HOST=0.0.0.0 are set).
EXPOSE 1884 8883 8884 8083 8084 8085 9090
ENV MGATE_MQTT_WITHOUT_TLS_PORT=1884 \
    MGATE_MQTT_WITHOUT_TLS_TARGET_HOST=127.0.0.1 \
    MGATE_MQTT_WITHOUT_TLS_TARGET_PORT=1883 \
    MGATE_SHUTDOWN_GRACE=20s
USER 10001
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/mgate"]
