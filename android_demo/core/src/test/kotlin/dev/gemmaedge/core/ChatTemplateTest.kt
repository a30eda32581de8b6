package dev.gemmaedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertThrows
import org.junit.Test

class ChatTemplateTest {
    @Suppress("UNCHECKED_CAST")
    @Test
    fun sharedVectors() {
        val cases = Vectors.load("chat_template.json")["cases"] as List<Map<String, Any?>>
        check(cases.size >= 5)
        for (case in cases) {
            val messages = (case["messages"] as List<Map<String, String>>).map { Message(it["role"]!!, it["content"]!!) }
            val add = case["add_generation_prompt"] as Boolean? ?: true
            assertEquals(case["name"] as String, case["expected"], ChatTemplate.format(messages, addGenerationPrompt = add))
        }
    }

    @Test
    fun unknownRoleIsRefused() {
        assertThrows(IllegalArgumentException::class.java) { ChatTemplate.format(listOf(Message("tool", "x"))) }
    }

    private val itPackage = PackageInfo("litertlm", "int8", null, "gemma3_text", "it", "model.litertlm", 2, emptyMap(), emptyMap())

    @Test
    fun itPackagesKeepTheEnginesTemplateSoTheTextIsWrappedOnce() {
        // The app sends the raw text; LiteRT-LM renders the package's Jinja template around it.
        assertNull(Settings().templateOverride(itPackage))
        assertNull(Settings(chat = true).templateOverride(itPackage.copy(variant = "pt")))
    }

    @Test
    fun ptPackagesGetThePlainCompletionTemplate() {
        assertEquals(ChatTemplate.COMPLETION_JINJA, Settings().templateOverride(itPackage.copy(variant = "pt")))
        assertEquals(ChatTemplate.COMPLETION_JINJA, Settings(chat = false).templateOverride(itPackage))
        assertEquals("<bos>Once upon", ChatTemplate.completion(listOf(Message("user", "Once upon"))))
        // no turn markers in the completion template
        assertFalse(ChatTemplate.COMPLETION_JINJA.contains(ChatTemplate.START))
    }
}
