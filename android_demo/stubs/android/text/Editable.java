package android.text;

/** The SDK's Editable also extends GetChars, Spannable and Appendable; the app only reads it. */
public interface Editable extends CharSequence {}
