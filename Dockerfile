# reelql release image: Swift 6 on Debian 12 (bookworm) with the same apt packages as .ci/run
# (scripts/setup.sh installs scripts/apt-packages.txt), and `reelql` as the entrypoint.
#   docker build -t reelql .
#   docker run --rm -v "$PWD:/data" reelql frames /data/clip.mp4 --json
FROM swift:6.0-bookworm
WORKDIR /opt/reelql
COPY scripts/ scripts/
RUN scripts/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN swift build -c release --force-resolved-versions --product reelql \
 && install -D "$(swift build -c release --show-bin-path)/reelql" /usr/local/bin/reelql
ENTRYPOINT ["reelql"]
