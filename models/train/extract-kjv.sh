#!/bin/sh
# Data recipe of models/kjv-chat: dumps the King James Version from Debian's `bible-kjv`
# package (text in bible-kjv-text, public domain: the 1611 translation's copyright has expired;
# see /usr/share/doc/bible-kjv-text/copyright) into one plain-text file, one verse a line.
#
#   apt-get install -y bible-kjv
#   sh models/train/extract-kjv.sh [.gpu/corpus]
#
# Writes DIR/kjv-bible.txt (about 4.3 MB, 31,102 verses: `bible -l0`'s format, a "Book N"
# heading per chapter and "  V text" per verse) and DIR/kjv-copyright.txt. corpus.py parses it.
set -eu
dir="${1:-.gpu/corpus}"
mkdir -p "$dir"
command -v bible >/dev/null || { echo "extract-kjv.sh: 'bible' not found: apt-get install -y bible-kjv" >&2; exit 1; }
bible -l0 'gen1:1-rev22:21' > "$dir/kjv-bible.txt"
cp /usr/share/doc/bible-kjv-text/copyright "$dir/kjv-copyright.txt"
verses=$(grep -cE '^ +[0-9]+ ' "$dir/kjv-bible.txt")
[ "$verses" -eq 31102 ] || { echo "extract-kjv.sh: expected 31102 verses, got $verses" >&2; exit 1; }
echo "wrote $dir/kjv-bible.txt ($(wc -c < "$dir/kjv-bible.txt") bytes, $verses verses)"
