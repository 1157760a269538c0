# Developer shortcuts. The README's two commands are scripts/demo.sh and scripts/test.sh.
.PHONY: setup build release test demo bench-clip bench-decode fixtures clean

setup:
	scripts/setup.sh

build:
	swift build

release:
	swift build -c release

test:
	scripts/test.sh

demo:
	scripts/demo.sh

# The decode benchmark's clip: 1280×720, 30 fps, 20 s, H.264 (x264 defaults), with film-like noise.
output/bench-720p30.mp4:
	mkdir -p output
	ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=20,noise=alls=8:allf=t" \
	  -c:v libx264 -preset medium -pix_fmt yuv420p $@

bench-clip: output/bench-720p30.mp4

bench-decode: release output/bench-720p30.mp4
	"$$(swift build -c release --show-bin-path)/reelql" bench decode output/bench-720p30.mp4

# Regenerates the fixture videos (ffmpeg CLI) and their reference data (needs the reference venv).
fixtures:
	fixtures/scripts/make_videos.sh
	"$$(scripts/reference-venv.sh)" fixtures/scripts/reference_frames.py

clean:
	rm -rf .build output/demo
