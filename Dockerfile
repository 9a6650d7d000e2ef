# Image of one presence node. Build it with ./scripts/docker-build.sh: it
# compiles the static binary on the host and stages it in artifacts/docker/.
# FROM scratch on purpose: building needs no base image and no registry, and
# the image holds nothing but the binary (no shell, so no RUN steps).
FROM scratch

ARG VERSION=dev
LABEL org.opencontainers.image.title="presence-node" \
      org.opencontainers.image.description="Clustered presence service (Discourse PresenceChannel without Redis)" \
      org.opencontainers.image.version="${VERSION}"

# /etc/passwd and /etc/group (user presence, uid/gid 10001), CA bundle, /tmp.
COPY artifacts/docker/rootfs/ /
# The empty /data and /tls, owned by the node's user so fresh named volumes
# mounted there are too (/tls: node-to-node TLS files, see
# docker-compose.tls.yml).
COPY --chown=10001:10001 artifacts/docker/owned/ /
COPY artifacts/docker/presence-node /presence-node

USER 10001:10001

# Bind every listener on all interfaces inside the container. Other nodes must
# be told where to reach this one: pass --advertise (PRESENCE_ADVERTISE) with
# the container's address, or the node advertises its bind host.
ENV PRESENCE_DATA_DIR=/data \
    PRESENCE_HTTP=0.0.0.0:8080 \
    PRESENCE_GOSSIP=0.0.0.0:7946 \
    PRESENCE_RPC=0.0.0.0:7947

VOLUME /data

# 8080 HTTP API, 7946 memberlist (TCP and UDP), 7947 node-to-node RPC and Raft.
EXPOSE 8080/tcp 7946/tcp 7946/udp 7947/tcp

# "health" GETs /healthz on PRESENCE_HTTP (0.0.0.0 is checked as 127.0.0.1),
# over HTTPS when PRESENCE_HTTP_TLS_CERT is set.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/presence-node", "health"]

# SIGTERM (docker stop) makes the node leave gracefully within 10 s.
ENTRYPOINT ["/presence-node"]
