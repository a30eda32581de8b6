package dev.gemmaedge.core

/**
 * A small strict JSON reader (objects -> Map, arrays -> List, numbers -> Double/Long,
 * strings, booleans, null). The core has no dependencies so it compiles with plain
 * kotlinc here and on Android alike; manifests and test vectors are all it reads.
 */
object Json {
    fun parse(text: String): Any? {
        val p = Parser(text)
        val value = p.value()
        p.skipSpace()
        if (p.i != text.length) throw IllegalArgumentException("trailing characters at ${p.i}")
        return value
    }

    private class Parser(val s: String) {
        var i = 0

        fun skipSpace() {
            while (i < s.length && s[i].isWhitespace()) i++
        }

        fun peek(): Char {
            if (i >= s.length) throw IllegalArgumentException("unexpected end of JSON")
            return s[i]
        }

        fun value(): Any? {
            skipSpace()
            if (i >= s.length) throw IllegalArgumentException("unexpected end of JSON")
            return when (s[i]) {
                '{' -> obj()
                '[' -> arr()
                '"' -> str()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> num()
            }
        }

        fun literal(word: String, v: Any?): Any? {
            if (!s.startsWith(word, i)) throw IllegalArgumentException("bad literal at $i")
            i += word.length
            return v
        }

        fun obj(): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            i++
            skipSpace()
            if (peek() == '}') { i++; return out }
            while (true) {
                skipSpace()
                val key = str()
                skipSpace()
                expect(':')
                out[key] = value()
                skipSpace()
                if (peek() == ',') { i++; continue }
                expect('}')
                return out
            }
        }

        fun arr(): List<Any?> {
            val out = ArrayList<Any?>()
            i++
            skipSpace()
            if (peek() == ']') { i++; return out }
            while (true) {
                out.add(value())
                skipSpace()
                if (peek() == ',') { i++; continue }
                expect(']')
                return out
            }
        }

        fun expect(c: Char) {
            if (i >= s.length || s[i] != c) throw IllegalArgumentException("expected '$c' at $i")
            i++
        }

        fun str(): String {
            expect('"')
            val b = StringBuilder()
            while (true) {
                if (i >= s.length) throw IllegalArgumentException("unterminated string")
                val c = s[i++]
                if (c == '\\' && i >= s.length) throw IllegalArgumentException("unterminated string")
                when (c) {
                    '"' -> return b.toString()
                    '\\' -> {
                        val e = s[i++]
                        when (e) {
                            'n' -> b.append('\n'); 't' -> b.append('\t'); 'r' -> b.append('\r')
                            'b' -> b.append('\b'); 'f' -> b.append('\u000c')
                            'u' -> { b.append(s.substring(i, i + 4).toInt(16).toChar()); i += 4 }
                            else -> b.append(e)
                        }
                    }
                    else -> b.append(c)
                }
            }
        }

        fun num(): Any {
            val start = i
            while (i < s.length && (s[i].isDigit() || s[i] in "+-.eE")) i++
            val t = s.substring(start, i)
            if (t.isEmpty()) throw IllegalArgumentException("unexpected '${s[start]}' at $start")
            return if (t.any { it in ".eE" }) t.toDouble() else t.toLong()
        }
    }
}
